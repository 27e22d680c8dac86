use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::*;
use crate::hub::testing::{event, published, video_of as frame};

/// Each frame's payload as it is: what the sink adds is the framing.
struct Payloads;

impl Encoder for Payloads {
    fn encode<'b>(
        &mut self,
        batch: &'b [Delivery],
        _now: Instant,
        _own: &mut Vec<u8>,
        parts: &mut Vec<Part<'b>>,
    ) -> usize {
        for d in batch {
            if let Delivery::Frame(f) = d {
                parts.push(Part::Shared(&f.payload));
            }
        }
        0
    }
}

/// Our end and the client's of a loopback connection whose buffers fill
/// after a few KB (RTSP's sink tests use it too).
pub(crate) async fn small_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&l.local_addr().unwrap().into()).unwrap();
    s.set_nonblocking(true).unwrap();
    let client = TcpStream::from_std(s.into()).unwrap();
    let (server, _) = l.accept().await.unwrap();
    socket2::SockRef::from(&server)
        .set_send_buffer_size(4096)
        .unwrap();
    (server, client)
}

/// The chunks of an HTTP/1.1 chunked body (RFC 9112 §7.1) in `buf`, as
/// far as they are whole; panics on bad framing and on an empty chunk
/// (which would end the body).
fn dechunk(buf: &mut Vec<u8>, out: &mut Vec<Vec<u8>>) {
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let hex = std::str::from_utf8(&buf[..eol]).expect("a chunk size line");
        let len = usize::from_str_radix(hex, 16).expect("a hex chunk size");
        assert!(len > 0, "an empty chunk ends the body");
        if buf.len() < eol + 2 + len + 2 {
            return;
        }
        assert_eq!(&buf[eol + 2 + len..eol + 4 + len], b"\r\n", "chunk end");
        out.push(buf[eol + 2..eol + 2 + len].to_vec());
        buf.drain(..eol + 4 + len);
    }
}

/// HTTP-FLV's case: each write is one chunk, whether the offer wrote it
/// whole, or the socket filled and the task wrote the rest later (the
/// rest of a chunk, then whole ones), with bytes of the task's own in
/// between. The body is every payload in order, once.
#[tokio::test]
async fn chunked_writes_stay_whole_chunks_across_a_full_socket() {
    let (_s, p, v) = published("cam").await;
    let (server, mut client) = small_pair().await;
    let sink = Arc::new(Sink::new(
        Payloads,
        Pump::new(v),
        Arc::new(server),
        Framing::Chunked,
    ));
    sink.lock().playing = true;
    let _guard = sink.go_direct();
    sink.flush().await.unwrap(); // the join's keyframe: 100 bytes of 0
    const FRAMES: i64 = 40;
    for i in 1..=FRAMES {
        assert!(p.publish(event(frame(i, 20_000))));
    }
    assert!(sink.lock().handed_over(), "the socket filled");
    let task = tokio::spawn({
        let sink = sink.clone();
        async move {
            std::future::poll_fn(|cx| sink.poll_wake(cx)).await;
            sink.write_own(b"own").await.unwrap();
            loop {
                std::future::poll_fn(|cx| sink.poll_wake(cx)).await;
                sink.flush().await.unwrap();
            }
        }
    });
    let expected = 100 + 3 + FRAMES as usize * 20_000;
    let mut body = Vec::new();
    let mut chunks = Vec::new();
    let mut buf = Vec::new();
    let mut b = vec![0u8; 16384];
    while body.len() < expected {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut b))
            .await
            .expect("the body keeps coming")
            .unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&b[..n]);
        let before = chunks.len();
        dechunk(&mut buf, &mut chunks);
        for c in &chunks[before..] {
            body.extend_from_slice(c);
        }
    }
    task.abort();
    assert_eq!(body.len(), expected);
    assert!(body[..100].iter().all(|b| *b == 0), "the join first");
    let own = body
        .windows(3)
        .position(|w| w == b"own")
        .expect("the task's own bytes");
    assert_eq!(own % 20_000, 100, "between two frames, not inside one");
    let frames: Vec<u8> = [&body[100..own], &body[own + 3..]].concat();
    for (i, f) in frames.chunks(20_000).enumerate() {
        assert!(
            f.iter().all(|b| *b == (i + 1) as u8),
            "frame {} in order",
            i + 1
        );
    }
}

/// A socket that takes nothing fails the task's write after the stall
/// bound (paused time: no real wait).
#[tokio::test(start_paused = true)]
async fn a_socket_that_takes_nothing_fails_after_the_stall_bound() {
    let (_s, p, v) = published("cam").await;
    let (server, _client) = small_pair().await;
    let sink = Arc::new(Sink::new(
        Payloads,
        Pump::new(v),
        Arc::new(server),
        Framing::Raw,
    ));
    sink.lock().playing = true;
    let _guard = sink.go_direct();
    for i in 1..=20 {
        assert!(p.publish(event(frame(i, 20_000))));
    }
    let started = Instant::now();
    let e = sink.flush().await.unwrap_err();
    assert!(
        matches!(&e, End::Write(e) if e.kind() == io::ErrorKind::TimedOut),
        "{e:?}"
    );
    assert!(started.elapsed() >= crate::net::WRITE_STALL);
}

#[test]
fn chunk_size_lines_are_hex_and_crlf() {
    for len in [1usize, 9, 10, 255, 256, 20_000, 1 << 20, usize::MAX] {
        let mut buf = [0u8; 18];
        let line = chunk_size_line(len, &mut buf);
        assert_eq!(line, format!("{len:X}\r\n").as_bytes(), "{len}");
    }
}
