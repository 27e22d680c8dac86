//! The one output pump (issue 18): what every byte-stream output does the
//! same way between a viewer and its socket. An output is a per-viewer
//! encoder (its protocol: FLV tags, RTMP chunks, fMP4 fragments,
//! multipart JPEG) around a [`Pump`], which does the rest. RTSP play and
//! HTTP-FLV over TCP use only its counting: the fan-out offers them each
//! batch in the producer's task ([`sink`], issue 17), so they never wait
//! in `next_batch`.
//!
//! - **the queueing:** [`Pump::next_batch`] waits for the viewer's next
//!   delivery and takes every other one already waiting, so a viewer that
//!   wakes late sends them all in one write (the only batching there is:
//!   from load, never from a timer; issue 17);
//! - **the stall timeout:** [`Pump::write`] writes within
//!   [`net::WRITE_STALL`] (a non-blocking write first; the timer only for
//!   a socket that did not take it all);
//! - **the byte counting and the delivery delay** of `/api/streams` and
//!   `/api/metrics` ([`Pump::write`], or [`Pump::sent`] and
//!   [`Pump::delivered`] where something else writes: hyper for the HTTP
//!   outputs, RTSP's sink);
//! - **the end:** a viewer ends when its stream stops or it falls behind
//!   for good ([`Ended`]); what it had already taken is still sent first.
//!   A connection's own end (shutdown, the peer hanging up) is its task's:
//!   `net::serve_conns` and `net::serve_http` drop it, and the viewer's
//!   lease with it.
//!
//! The connection loops stay the protocols' own, because each also reads
//! its peer while it plays (RTMP acknowledgements, HTTP nothing). RTMP and
//! the HTTP outputs queue `Bytes` that share the frame's FLV tag (hyper
//! needs owned chunks).

use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;

use crate::hub::fanout::{Delivery, Ended};
use crate::hub::Viewer;
use crate::net;

pub mod sink;

/// Deliveries taken per wake-up. A viewer that is keeping up finds one or
/// two; the bound keeps one late viewer's write (and the time its task
/// holds a worker thread) short, and leaves the rest for the next.
pub const MAX_BATCH: usize = 64;

/// The capacity of a batch kept from one wake-up to the next.
const KEEP: usize = 4;

/// One viewer's side of an output: see the module doc.
pub struct Pump {
    viewer: Viewer,
    /// The viewer ended while a batch was being taken: reported by the
    /// next call, after the batch is sent.
    ended: Option<Ended>,
}

impl Pump {
    pub fn new(viewer: Viewer) -> Pump {
        Pump {
            viewer,
            ended: None,
        }
    }

    pub fn viewer(&self) -> &Viewer {
        &self.viewer
    }

    pub fn viewer_mut(&mut self) -> &mut Viewer {
        &mut self.viewer
    }

    /// Waits for the viewer's next delivery, then takes every other one
    /// that is ready (up to [`MAX_BATCH`]) into `batch`, which it clears
    /// first. Cancel-safe: it takes nothing from the viewer until its one
    /// wait is over, and nothing after it waits.
    pub async fn next_batch(&mut self, batch: &mut Vec<Delivery>) -> Result<(), Ended> {
        // A viewer keeping up takes one or two at a time: keep room for
        // that, but give back what a burst grew (64 deliveries kept by
        // each of 500 viewers was 3 MB of RSS; a new vector per burst
        // costs nothing measurable).
        if batch.capacity() > KEEP {
            *batch = Vec::new();
        } else {
            batch.clear();
        }
        if let Some(e) = self.ended.take() {
            return Err(e);
        }
        batch.push(self.viewer.next().await?);
        while batch.len() < MAX_BATCH {
            match self.viewer.try_next() {
                Some(Ok(d)) => batch.push(d),
                Some(Err(e)) => {
                    self.ended = Some(e);
                    break;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Writes a batch's bytes, all of `slices`, to the viewer's socket
    /// within the stall bound; counts them as sent, and the batch's
    /// delivery delay ends when the socket has taken them.
    pub async fn write(&self, sock: &mut TcpStream, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        self.sent(slices.iter().map(|s| s.len()).sum());
        net::write_all_within(sock, slices).await?;
        self.delivered();
        Ok(())
    }

    /// Counts `bytes` as sent to the viewer, where something other than
    /// [`Pump::write`] writes them.
    pub fn sent(&self, bytes: usize) {
        self.viewer
            .stats()
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The batch's delivery delay ends: its last byte was handed to the
    /// socket (or to hyper, which asked for more).
    pub fn delivered(&self) {
        self.viewer.stats().delivered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::testing::{published, video};

    /// The first byte of each frame's payload (`video` fills it with its
    /// ms), or `None` for a track notice.
    fn marks(batch: &[Delivery]) -> Vec<Option<u8>> {
        batch
            .iter()
            .map(|d| match d {
                Delivery::Frame(f) => Some(f.payload[0]),
                Delivery::Tracks { .. } => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_viewer_that_wakes_late_takes_everything_waiting_in_one_batch() {
        let (_s, p, v) = published("cam").await;
        let mut pump = Pump::new(v);
        let mut batch = Vec::new();
        pump.next_batch(&mut batch).await.unwrap();
        assert_eq!(marks(&batch), [None, Some(0)], "the join: tracks, keyframe");
        for ms in [40, 80, 120] {
            assert!(p.publish(crate::hub::testing::event(video(ms, false))));
        }
        pump.next_batch(&mut batch).await.unwrap();
        assert_eq!(marks(&batch), [Some(40), Some(80), Some(120)]);
        // Nothing more is waiting: the next batch waits for the next frame.
        let mut next = std::pin::pin!(pump.next_batch(&mut batch));
        assert!(futures_util::poll!(next.as_mut()).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_bounded_and_the_rest_comes_next() {
        let (_s, p, v) = published("cam").await;
        let mut pump = Pump::new(v);
        let mut batch = Vec::new();
        pump.next_batch(&mut batch).await.unwrap();
        for ms in 1..=2 * MAX_BATCH as i64 + 10 {
            assert!(p.publish(crate::hub::testing::event(video(ms, false))));
        }
        let mut sizes = vec![];
        let mut first = vec![];
        loop {
            // Each batch in a poll of its own, as a viewer's task takes
            // them: tokio's budget is per poll.
            tokio::task::yield_now().await;
            let pending = {
                let mut next = std::pin::pin!(pump.next_batch(&mut batch));
                futures_util::poll!(next.as_mut()).is_pending()
            };
            if pending {
                break;
            }
            sizes.push(batch.len());
            first.push(marks(&batch)[0]);
        }
        assert_eq!(sizes, [MAX_BATCH, MAX_BATCH, 10]);
        assert!(batch.capacity() < MAX_BATCH, "a burst's room is given back");
        let m = MAX_BATCH as u8;
        assert_eq!(first, [Some(1), Some(m + 1), Some(2 * m + 1)], "in order");
        assert_eq!(pump.viewer().stats().drops.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_comes_after_what_the_viewer_had_already_taken() {
        let (s, p, v) = published("cam").await;
        let mut pump = Pump::new(v);
        let mut batch = Vec::new();
        pump.next_batch(&mut batch).await.unwrap();
        assert!(p.publish(crate::hub::testing::event(video(40, false))));
        s.shutdown().await;
        pump.next_batch(&mut batch).await.unwrap();
        assert_eq!(marks(&batch), [Some(40)]);
        assert_eq!(pump.next_batch(&mut batch).await, Err(Ended::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_set_aside_comes_before_anything_new() {
        let (_s, p, v) = published("cam").await;
        let mut pump = Pump::new(v);
        let mut batch = Vec::new();
        pump.next_batch(&mut batch).await.unwrap();
        for d in batch.drain(..) {
            pump.viewer_mut().set_aside(d);
        }
        assert_eq!(pump.viewer().set_aside_items().count(), 2);
        assert!(p.publish(crate::hub::testing::event(video(40, false))));
        pump.next_batch(&mut batch).await.unwrap();
        assert_eq!(marks(&batch), [None, Some(0), Some(40)]);
    }

    #[tokio::test]
    async fn a_write_counts_what_the_socket_took() {
        let (_s, _p, v) = published("cam").await;
        let pump = Pump::new(v);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut sock = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = l.accept().await.unwrap();
        let (a, b) = (b"ab".to_vec(), b"cde".to_vec());
        pump.write(&mut sock, &mut [IoSlice::new(&a), IoSlice::new(&b)])
            .await
            .unwrap();
        let mut got = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"abcde");
        assert_eq!(pump.viewer().stats().bytes.load(Ordering::Relaxed), 5);
        pump.sent(7);
        assert_eq!(pump.viewer().stats().bytes.load(Ordering::Relaxed), 12);
    }
}
