use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::*;
use crate::hub::fanout::{DirectGuard, Ended};
use crate::hub::testing::{event, published};
use crate::media::ms_to_ticks;
use crate::pump::sink::tests::small_pair;
use crate::pump::sink::Framing;
use crate::pump::Pump;

/// An avcC with one SPS and one PPS (ISO 14496-15 §5.3.3.1), 4-byte NAL
/// lengths.
const AVCC: &[u8] = &[
    1, 66, 0xe0, 30, 0xff, 0xe1, 0, 4, 0x67, 66, 0xe0, 30, 1, 0, 2, 0x68, 0xce,
];

/// A non-IDR slice of `len` bytes at `ms`: FU-A fragments over RTP.
fn slice(ms: i64, len: usize) -> Frame {
    let mut p = (len as u32).to_be_bytes().to_vec();
    p.push(0x41);
    p.resize(4 + len, ms as u8);
    let t = ms_to_ticks(ms);
    Frame::new(Codec::H264, t, t, false, Bytes::from(p))
}

/// A playing H.264 session of `viewer` on `sock`, over interleaved
/// channels 0 and 1, registered with the fan-out.
fn playing(viewer: crate::hub::Viewer, sock: TcpStream) -> (Arc<Sink>, DirectGuard) {
    let params = TrackParams::new(&TrackInfo {
        codec: Codec::H264,
        config: Bytes::from_static(AVCC),
    })
    .unwrap();
    let out = Out {
        kind: TrackKind::Video,
        codec: Codec::H264,
        sender: Sender::new(params.payload_type()),
        params,
        transport: Some(Transport::Tcp { rtp: 0, rtcp: 1 }),
        reported: false,
    };
    let sink = Arc::new(Sink::new(
        Media::new("cam", "S", vec![out]),
        Pump::new(viewer),
        Arc::new(sock),
        Framing::Raw,
    ));
    sink.lock().playing = true;
    let guard = sink.go_direct();
    (sink, guard)
}

/// What a client read: RTP packets of channel 0 as (seq, rtp time,
/// marker), and where among them each RTSP response came.
#[derive(Default)]
struct Wire {
    rtp: Vec<(u16, u32, bool)>,
    responses: Vec<(usize, String)>,
}

/// Parses interleaved data (RFC 2326 §10.12) and responses from `buf`,
/// leaving an incomplete tail; panics on anything else.
fn parse(buf: &mut Vec<u8>, w: &mut Wire) {
    loop {
        if buf.first() == Some(&b'$') {
            if buf.len() < 4 {
                return;
            }
            let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                return;
            }
            if buf[1] == 0 {
                let p = &buf[4..4 + len];
                w.rtp.push((
                    u16::from_be_bytes([p[2], p[3]]),
                    u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                    p[1] & 0x80 != 0,
                ));
            }
            buf.drain(..4 + len);
        } else if buf.len() >= 4 {
            assert!(
                buf.starts_with(b"RTSP/1.0 "),
                "a packet was cut: {:?}",
                &buf[..16.min(buf.len())]
            );
            let Some(end) = buf.windows(4).position(|x| x == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            w.responses.push((w.rtp.len(), head));
            buf.drain(..end + 4);
        } else {
            return;
        }
    }
}

/// What a playing connection's task does with its sink (`Conn::run`): it
/// writes when told, and sends replies through it.
fn conn_task(
    sink: Arc<Sink>,
) -> (
    tokio::sync::mpsc::Sender<&'static [u8]>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static [u8]>(1);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = std::future::poll_fn(|cx| sink.poll_wake(cx)) => sink.flush().await.unwrap(),
                r = rx.recv() => match r {
                    Some(reply) => sink.write_own(reply).await.unwrap(),
                    None => return,
                },
            }
        }
    });
    (tx, task)
}

/// The flow a stalled player sees: the offers write until the socket is
/// full, the rest goes to the connection's task (`pending`), later batches
/// wait in the ring while it writes, and a reply made meanwhile goes out
/// after what is pending. As the player reads again, more frames come, and
/// every packet arrives once, in order, whole, with the reply between two
/// packets.
#[tokio::test]
async fn a_full_socket_hands_the_rest_to_the_task_and_the_wire_stays_whole_and_in_order() {
    let (_s, p, v) = published("cam").await;
    let (server, mut client) = small_pair().await;
    let (sink, _guard) = playing(v, server);
    sink.flush().await.unwrap(); // the join: no packets from its frame
    const FRAMES: i64 = 60;
    for i in 1..=FRAMES {
        assert!(p.publish(event(slice(i * 40, 20_000))));
    }
    {
        let m = sink.lock();
        assert!(m.handed_over(), "a full socket hands over to the task");
        assert!(m.owed() > 0, "with the rest of the write");
    }
    let (replies, task) = conn_task(sink.clone());
    replies
        .send(b"RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n")
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut w = Wire::default();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16384];
        while w.rtp.iter().filter(|r| r.2).count() < 2 * FRAMES as usize {
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            buf.extend_from_slice(&chunk[..n]);
            parse(&mut buf, &mut w);
        }
        (w, buf)
    });
    // More frames while the task writes: the offers must leave them to it.
    for i in FRAMES + 1..=2 * FRAMES {
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(p.publish(event(slice(i * 40, 20_000))));
    }
    let (w, rest) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("everything arrives")
        .unwrap();
    drop(replies);
    task.await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(w.responses.len(), 1);
    assert!(w.responses[0].1.contains("CSeq: 7"));
    assert!(w.responses[0].0 > 0, "after the media that was pending");
    for pair in w.rtp.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0.wrapping_add(1),
            "seq in order, none lost or twice"
        );
    }
    let times: Vec<u32> = w.rtp.iter().filter(|r| r.2).map(|r| r.1).collect();
    assert_eq!(times.len(), 2 * FRAMES as usize, "every frame once");
    for pair in times.windows(2) {
        assert_eq!(pair[1].wrapping_sub(pair[0]), 40 * 90, "frames in order");
    }
    // Caught up: the offers write again, and the viewer lost nothing.
    assert!(!sink.lock().handed_over());
    assert_eq!(
        sink.lock()
            .pump
            .viewer()
            .stats()
            .drops
            .load(Ordering::Relaxed),
        0
    );
}

/// While the socket takes everything, the producer's publish writes it:
/// the connection's task is never needed (nor told).
#[tokio::test]
async fn a_socket_that_keeps_up_is_written_by_the_offers_alone() {
    let (_s, p, v) = published("cam").await;
    let (server, mut client) = small_pair().await;
    let (sink, guard) = playing(v, server);
    sink.flush().await.unwrap();
    let mut w = Wire::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    for i in 1..=5 {
        assert!(p.publish(event(slice(i * 40, 300))));
        assert!(!sink.lock().handed_over());
        while w.rtp.iter().filter(|r| r.2).count() < i as usize {
            let n = client.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            parse(&mut buf, &mut w);
        }
    }
    let mut woken = std::pin::pin!(std::future::poll_fn(|cx| sink.poll_wake(cx)));
    assert!(
        futures_util::poll!(woken.as_mut()).is_pending(),
        "the task is not needed"
    );
    // Unregistered (PAUSE, TEARDOWN): publishing writes nothing more.
    drop(guard);
    assert!(p.publish(event(slice(240, 300))));
    let more = tokio::time::timeout(Duration::from_millis(200), client.read(&mut chunk)).await;
    assert!(
        more.is_err(),
        "nothing after the registration is gone: {more:?}"
    );
}

/// The stream's end reaches a viewer through the offer: the task is told,
/// and its flush ends the connection with the viewer's reason.
#[tokio::test]
async fn the_streams_end_is_told_to_the_task() {
    let (s, _p, v) = published("cam").await;
    let (server, _client) = small_pair().await;
    let (sink, _guard) = playing(v, server);
    sink.flush().await.unwrap();
    s.shutdown().await;
    tokio::time::timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| sink.poll_wake(cx)),
    )
    .await
    .expect("the task is told");
    let e = sink.flush().await.unwrap_err();
    assert!(matches!(e, End::Viewer(Ended::Stopped)), "{e:?}");
}
