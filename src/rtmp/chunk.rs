//! RTMP chunk streams (Adobe "RTMP Specification 1.0", §5.3): messages are
//! cut into chunks of at most the sender's chunk size, and chunks of
//! different chunk streams interleave.
//!
//! The reader checks before it parses: [`ChunkReader::read`] says
//! "incomplete" (`Ok(None)`) until a whole chunk is buffered, and only then
//! consumes it. A message that fits one chunk is cut out of the read buffer
//! without a copy. The writer builds each chunk header once and slices the
//! payload (shared by every viewer) between them, never copying it.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// §5.2: C1/S1/C2/S2 are 1536 bytes; C0/S0 one byte, version 3.
pub const HANDSHAKE_SIZE: usize = 1536;
pub const VERSION: u8 = 3;

/// §5.4 protocol control messages, and the message types of §7.1.
pub const SET_CHUNK_SIZE: u8 = 1;
pub const ABORT: u8 = 2;
pub const ACK: u8 = 3;
pub const USER_CONTROL: u8 = 4;
pub const WINDOW_ACK_SIZE: u8 = 5;
pub const SET_PEER_BANDWIDTH: u8 = 6;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
pub const DATA_AMF3: u8 = 15;
pub const COMMAND_AMF3: u8 = 17;
pub const DATA_AMF0: u8 = 18;
pub const COMMAND_AMF0: u8 = 20;

/// The largest message we reassemble: an FLV tag's worth (the same bound
/// as the FLV demuxer's). The length field allows 16 MiB.
pub const MAX_MESSAGE: usize = crate::media::flv::MAX_TAG_SIZE;
/// Chunk streams a peer may have open at once. Encoders use a handful
/// (2 for control, 3-8 for commands and media).
const MAX_CHUNK_STREAMS: usize = 64;
/// Bytes of unfinished messages held across all chunk streams. Interleaved
/// audio and video need a frame's worth; a peer opening many big messages
/// at once is refused rather than allowed to make us hold them.
const MAX_PARTIAL: usize = 16 << 20;
/// §5.3.1.3: a timestamp field of this value means "see the 4-byte
/// extended timestamp".
const EXTENDED: u32 = 0xFF_FFFF;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    /// Milliseconds, as the peer counts them (wraps at 2^32).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RTMP chunk at byte offset {offset}: {reason}")]
pub struct ChunkError {
    /// From the first byte after the handshake.
    pub offset: u64,
    pub reason: String,
}

/// What a chunk stream remembers for the compressed headers (fmt 1-3).
#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// The last header carried an extended timestamp; its fmt 3
    /// continuations repeat it (as ffmpeg, librtmp and OBS send them).
    extended: bool,
    /// A fmt 0 header has been seen: fmt 1-3 have something to refer to.
    started: bool,
    partial: Option<BytesMut>,
}

#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    streams: HashMap<u32, ChunkStream>,
    offset: u64,
    /// Bytes in `partial` buffers (see [`MAX_PARTIAL`]).
    partial_bytes: usize,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkReader {
    pub fn new() -> Self {
        ChunkReader {
            // §5.4.1: 128 until the peer says otherwise.
            chunk_size: 128,
            streams: HashMap::new(),
            offset: 0,
            partial_bytes: 0,
        }
    }

    /// §5.4.1 Set Chunk Size from the peer. The top bit must be 0.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > 0x7FFF_FFFF {
            return Err(self.err(0, format!("invalid chunk size {size}")));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// §5.4.2 Abort: drop the partly received message of a chunk stream.
    pub fn abort(&mut self, csid: u32) {
        if let Some(p) = self.streams.get_mut(&csid).and_then(|s| s.partial.take()) {
            self.partial_bytes -= p.len();
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn err(&self, at: usize, reason: impl Into<String>) -> ChunkError {
        ChunkError {
            offset: self.offset + at as u64,
            reason: reason.into(),
        }
    }

    /// The next complete message in `buf`, consuming the chunks it reads.
    /// `Ok(None)`: more input is needed (what was consumed is kept).
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some((csid, header_len, fmt)) = basic_header(buf) else {
                return Ok(None);
            };
            let mh_len = [11, 7, 3, 0][fmt as usize];
            if buf.len() < header_len + mh_len {
                return Ok(None);
            }
            let known = self.streams.get(&csid);
            if fmt != 0 && !known.is_some_and(|s| s.started) {
                return Err(self.err(
                    0,
                    format!("chunk stream {csid} starts with a type {fmt} header (needs type 0)"),
                ));
            }
            if known.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(self.err(0, format!("more than {MAX_CHUNK_STREAMS} chunk streams")));
            }
            let h = &buf[header_len..header_len + mh_len];
            let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
            let ts_field = (fmt < 3).then(|| u24(&h[0..3]));
            let st = known;
            let continuing = st.is_some_and(|s| s.partial.is_some());
            // Whether a 4-byte extended timestamp follows this header.
            let extended = match ts_field {
                Some(t) => t == EXTENDED,
                None => st.is_some_and(|s| s.extended),
            };
            let ext_len = if extended { 4 } else { 0 };
            let at = header_len + mh_len;
            if buf.len() < at + ext_len {
                return Ok(None);
            }
            let ext = extended.then(|| {
                let b = &buf[at..at + 4];
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            });
            let length = if fmt <= 1 {
                u24(&h[3..6]) as usize
            } else {
                st.map_or(0, |s| s.length)
            };
            if length > MAX_MESSAGE {
                return Err(self.err(
                    header_len + 3,
                    format!("message of {length} bytes exceeds {MAX_MESSAGE}"),
                ));
            }
            if fmt <= 1 && continuing {
                return Err(self.err(
                    0,
                    format!("chunk stream {csid}: a new message header before the last message was complete"),
                ));
            }
            let have = st.and_then(|s| s.partial.as_ref()).map_or(0, |p| p.len());
            let piece = (length - have).min(self.chunk_size);
            let total = at + ext_len + piece;
            if piece < length - have && self.partial_bytes + piece > MAX_PARTIAL {
                return Err(self.err(
                    0,
                    format!("more than {MAX_PARTIAL} bytes of unfinished messages"),
                ));
            }
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }

            // Complete: commit.
            let s = self.streams.entry(csid).or_default();
            match fmt {
                0 => {
                    s.timestamp = ext.unwrap_or(ts_field.unwrap_or(0));
                    s.delta = 0;
                    s.length = length;
                    s.type_id = h[6];
                    s.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
                    s.started = true;
                }
                1 | 2 => {
                    let delta = ext.unwrap_or(ts_field.unwrap_or(0));
                    s.delta = delta;
                    s.timestamp = s.timestamp.wrapping_add(delta);
                    if fmt == 1 {
                        s.length = length;
                        s.type_id = h[6];
                    }
                }
                // §5.3.1.2.4: a type 3 chunk that starts a message repeats
                // the last delta; one that continues a message changes
                // nothing.
                _ if !continuing => s.timestamp = s.timestamp.wrapping_add(s.delta),
                _ => {}
            }
            if fmt < 3 {
                s.extended = extended;
            }
            buf.advance(at + ext_len);
            self.offset += (at + ext_len) as u64;
            let data = buf.split_to(piece);
            self.offset += piece as u64;
            let payload = match s.partial.take() {
                // The whole message in one chunk: no copy.
                None if piece == s.length => data.freeze(),
                // Grown as chunks arrive, not sized by the header's claim.
                None => {
                    self.partial_bytes += piece;
                    s.partial = Some(data);
                    continue;
                }
                Some(mut p) => {
                    self.partial_bytes -= p.len();
                    p.put_slice(&data);
                    if p.len() < s.length {
                        self.partial_bytes += p.len();
                        s.partial = Some(p);
                        continue;
                    }
                    p.freeze()
                }
            };
            return Ok(Some(Message {
                csid,
                timestamp: s.timestamp,
                type_id: s.type_id,
                stream_id: s.stream_id,
                payload,
            }));
        }
    }
}

/// §5.3.1.1: (chunk stream id, header length, fmt), or `None` if
/// incomplete.
fn basic_header(buf: &[u8]) -> Option<(u32, usize, u8)> {
    let b0 = *buf.first()?;
    let fmt = b0 >> 6;
    match b0 & 0x3f {
        0 => Some((64 + *buf.get(1)? as u32, 2, fmt)),
        1 => {
            let (lo, hi) = (*buf.get(1)? as u32, *buf.get(2)? as u32);
            Some((64 + lo + hi * 256, 3, fmt))
        }
        id => Some((id as u32, 1, fmt)),
    }
}

/// One-byte type 3 headers for chunk streams 2-63, to slice from without
/// allocating.
static CONTINUATION: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = 0xC0 | i as u8;
        i += 1;
    }
    t
};

/// Cuts messages into chunks of `chunk_size`, each message with a full
/// (type 0) header: simpler than header compression, and 11 bytes per
/// message is nothing next to video.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: usize,
    scratch: BytesMut,
}

impl ChunkWriter {
    pub fn new(chunk_size: usize) -> Self {
        ChunkWriter {
            chunk_size,
            scratch: BytesMut::with_capacity(1024),
        }
    }

    /// Appends one message's chunks to `out`; `payload` is sliced, not
    /// copied. `csid` is 2-63.
    pub fn write(
        &mut self,
        out: &mut Vec<Bytes>,
        csid: u8,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &Bytes,
    ) {
        debug_assert!((2..64).contains(&csid));
        let extended = timestamp >= EXTENDED;
        self.scratch.reserve(16);
        self.scratch.put_u8(csid);
        let ts = if extended { EXTENDED } else { timestamp };
        self.scratch.put_slice(&ts.to_be_bytes()[1..]);
        self.scratch
            .put_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        self.scratch.put_u8(type_id);
        self.scratch.put_u32_le(stream_id);
        if extended {
            self.scratch.put_u32(timestamp);
        }
        out.push(self.scratch.split().freeze());
        let mut at = 0;
        loop {
            let end = (at + self.chunk_size).min(payload.len());
            if end > at {
                out.push(payload.slice(at..end));
            }
            at = end;
            if at >= payload.len() {
                break;
            }
            let i = csid as usize;
            out.push(Bytes::from_static(&CONTINUATION[i..i + 1]));
            if extended {
                out.push(Bytes::copy_from_slice(&timestamp.to_be_bytes()));
            }
        }
    }

    /// A message built from small pieces (commands, control): one buffer.
    pub fn write_small(
        &mut self,
        out: &mut Vec<Bytes>,
        csid: u8,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) {
        let p = Bytes::copy_from_slice(payload);
        self.write(out, csid, 0, type_id, stream_id, &p);
    }
}

/// Feeds `data` through a reader in pieces of `step` bytes, for tests and
/// the fuzz target: every message found, or the first error.
pub fn read_all(data: &[u8], step: usize) -> Result<Vec<Message>, ChunkError> {
    let mut r = ChunkReader::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(m) = r.read(&mut buf)? {
            if m.type_id == SET_CHUNK_SIZE && m.payload.len() >= 4 {
                r.set_chunk_size(u32::from_be_bytes([
                    m.payload[0],
                    m.payload[1],
                    m.payload[2],
                    m.payload[3],
                ]))?;
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// The fuzz target's body (`fuzz/fuzz_targets/rtmp_chunk.rs`): arbitrary
/// bytes after a handshake must give messages or an error, never a panic
/// or unbounded memory.
pub fn fuzz(data: &[u8]) {
    let step = data.first().map_or(1, |b| *b as usize % 64 + 1);
    if let Ok(msgs) = read_all(data, step) {
        for m in msgs {
            assert!(m.payload.len() <= MAX_MESSAGE);
            if m.type_id == COMMAND_AMF0 || m.type_id == DATA_AMF0 {
                let _ = super::amf0::decode_all(&m.payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(msgs: &[(u8, u32, u8, Vec<u8>)], chunk: usize) -> Vec<u8> {
        let mut w = ChunkWriter::new(chunk);
        let mut out = Vec::new();
        for (csid, ts, ty, p) in msgs {
            w.write(&mut out, *csid, *ts, *ty, 1, &Bytes::from(p.clone()));
        }
        out.concat()
    }

    #[test]
    fn reads_what_the_writer_writes_in_any_split() {
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let msgs = vec![
            (4u8, 0u32, VIDEO, big.clone()),
            (5, 23, AUDIO, vec![0xaf, 1, 2, 3]),
            (4, 0x0100_0000, VIDEO, big.clone()), // extended timestamp
        ];
        // The writer uses the default chunk size here, so the reader needs
        // no Set Chunk Size.
        let wire = encode(&msgs, 128);
        for step in [1, 7, 128, 4096] {
            let got = read_all(&wire, step).unwrap();
            assert_eq!(got.len(), 3);
            for (g, (csid, ts, ty, p)) in got.iter().zip(&msgs) {
                assert_eq!((g.csid, g.timestamp, g.type_id), (*csid as u32, *ts, *ty));
                assert_eq!(&g.payload[..], &p[..]);
            }
        }
    }

    #[test]
    fn compressed_headers_carry_deltas_and_lengths() {
        // fmt 0 at ts 1000 len 2, fmt 2 delta 40 (same length), fmt 3 repeats
        // the delta; fmt 1 changes length and type.
        let mut w = vec![0x06, 0, 0x03, 0xE8, 0, 0, 2, VIDEO, 1, 0, 0, 0, 0x17, 1];
        w.extend([0x86, 0, 0, 40, 0x27, 1]);
        w.extend([0xC6, 0x27, 1]);
        w.extend([0x46, 0, 0, 5, 0, 0, 1, AUDIO, 0xaf]);
        let got = read_all(&w, 3).unwrap();
        let ts: Vec<_> = got.iter().map(|m| (m.timestamp, m.type_id)).collect();
        assert_eq!(
            ts,
            vec![(1000, VIDEO), (1040, VIDEO), (1080, VIDEO), (1085, AUDIO)]
        );
    }

    #[test]
    fn many_big_unfinished_messages_are_refused() {
        // 64 chunk streams each opening an 8 MiB message with 128 bytes.
        let mut w = Vec::new();
        for csid in 3u8..63 {
            w.extend([csid, 0, 0, 0, 0x7f, 0xff, 0xff, VIDEO, 1, 0, 0, 0]);
            w.extend([0u8; 128]);
        }
        assert!(read_all(&w, 4096).is_ok(), "128 bytes each is fine");
        let mut r = ChunkReader::new();
        r.set_chunk_size(1 << 20).unwrap();
        let mut buf = BytesMut::new();
        let mut err = None;
        for csid in 3u8..63 {
            buf.extend_from_slice(&[csid, 0, 0, 0, 0x7f, 0xff, 0xff, VIDEO, 1, 0, 0, 0]);
            buf.extend_from_slice(&vec![0u8; 1 << 20]);
            if let Err(e) = r.read(&mut buf) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("refused before holding 60 MiB");
        assert!(e.reason.contains("unfinished"), "{e}");
    }

    #[test]
    fn two_and_three_byte_chunk_stream_ids() {
        let mut w = vec![0x00, 10, 0, 0, 0, 0, 0, 1, AUDIO, 1, 0, 0, 0, 0xaa];
        w.extend([0x01, 0x10, 0x01, 0, 0, 0, 0, 0, 1, AUDIO, 1, 0, 0, 0, 0xbb]);
        let got = read_all(&w, 1).unwrap();
        assert_eq!(got[0].csid, 74);
        assert_eq!(got[1].csid, 64 + 0x10 + 256);
    }

    #[test]
    fn garbage_is_an_error_with_an_offset() {
        // A fmt 1 header on a chunk stream never opened.
        let e = read_all(&[0x43, 0, 0, 0, 0, 0, 1, 20], 8).unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(e.reason.contains("type 1 header"), "{e}");
        // A 16 MiB message is refused before anything is buffered.
        let e = read_all(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0], 12).unwrap_err();
        assert!(e.reason.contains("exceeds"), "{e}");
    }

    #[test]
    fn the_writer_never_copies_payloads() {
        let payload = Bytes::from(vec![7u8; 300]);
        let mut w = ChunkWriter::new(128);
        let mut out = Vec::new();
        w.write(&mut out, 6, 0, VIDEO, 1, &payload);
        let inside = |b: &Bytes| {
            b.as_ptr() >= payload.as_ptr()
                && b.as_ptr() < payload.as_ptr().wrapping_add(payload.len())
        };
        let shared: Vec<_> = out.iter().filter(|b| inside(b)).collect();
        assert_eq!(shared.len(), 3, "{out:?}");
        assert_eq!(
            shared.iter().map(|b| b.len()).sum::<usize>(),
            payload.len(),
            "a chunk of the payload was copied"
        );
        // And the chunks read back as the message.
        let msgs = read_all(&out.concat(), 100).unwrap();
        assert_eq!(msgs[0].payload, payload);
    }

    /// testdata/rtmp_publish.bin: what ffmpeg 5.1 sent after the handshake
    /// when publishing `rtmp://host/live/cam` (the first 48000 bytes).
    #[test]
    fn reads_a_capture_of_ffmpeg_publishing() {
        let data = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rtmp_publish.bin"),
        )
        .unwrap();
        let mut r = ChunkReader::new();
        let mut buf = BytesMut::from(&data[..]);
        let mut commands = Vec::new();
        let mut tags = crate::media::flv::TagParser::default();
        let mut tracks = Vec::new();
        let mut frames = 0;
        while let Ok(Some(m)) = r.read(&mut buf) {
            match m.type_id {
                SET_CHUNK_SIZE => r
                    .set_chunk_size(u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
                    .unwrap(),
                COMMAND_AMF0 => {
                    let v = super::super::amf0::decode_all(&m.payload).unwrap();
                    commands.push(v[0].as_str().unwrap().to_string());
                }
                AUDIO | VIDEO => {
                    for ev in tags
                        .parse(m.type_id, m.payload, m.timestamp as i64)
                        .unwrap()
                        .into_iter()
                        .flatten()
                    {
                        match ev {
                            crate::media::flv::Event::Track(t) => tracks.push(t.codec),
                            crate::media::flv::Event::Frame(_) => frames += 1,
                            e => panic!("{e:?}"),
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(
            commands,
            [
                "connect",
                "releaseStream",
                "FCPublish",
                "createStream",
                "publish"
            ]
        );
        assert_eq!(
            tracks,
            [crate::media::Codec::H264, crate::media::Codec::Aac]
        );
        assert!(frames > 10, "{frames} frames");
    }

    #[test]
    fn replay_fuzz_corpus() {
        crate::replay_fuzz_corpus("rtmp_chunk", fuzz);
    }

    proptest! {
        #[test]
        fn never_panics_and_never_overreads(data in prop::collection::vec(any::<u8>(), 0..2048)) {
            fuzz(&data);
        }
    }
}
