//! A viewer written from the producer's side (issue 17): the fan-out
//! offers each batch to every registered [`Sink`] in the producer's task
//! ([`Direct`]), and the sink takes what its viewer has ready, has its
//! protocol's [`Encoder`] make the bytes, and writes them with the shared
//! payloads in one non-blocking `writev`. A frame reaches 500 viewers as
//! 500 such writes from one task, instead of 500 task wake-ups, each with
//! its connection's poll, its place in the ring's waiter list and its
//! scheduling: that was about half the user time per write.
//!
//! The viewer's own task (RTSP's connection, the HTTP-FLV body that hyper
//! polls) writes only what the socket did not take: the rest of a write
//! (copied), then what piled up in the ring meanwhile, within
//! [`crate::net::WRITE_STALL`]. While it does, offers leave that viewer's
//! batches in the ring, so the wire keeps the ring's order; when nothing
//! more is ready, the offers take over again. Bytes of the task's own (an
//! RTSP reply) go the same way, after what is pending.
//!
//! One `std::sync::Mutex` per sink guards it, held for non-blocking work
//! only (taking from the ring, making headers, one `writev`), never
//! across an `.await`.

use std::future::Future;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::{Pump, MAX_BATCH};
use crate::hub::fanout::{Delivery, Direct, DirectGuard, Ended};

/// Payload bytes taken into one write: a keyframe or two. With RTP's two
/// slices per 1.4 KB packet that stays under `writev`'s 1024 (IOV_MAX); a
/// longer write would be cut there, and the rest copied for the task.
const MAX_WRITE: usize = 256 << 10;

/// One piece of a write, in order.
pub enum Part<'b> {
    /// A range of the encoder's own bytes (headers) for this write.
    Own(Range<usize>),
    /// A payload shared by every viewer, borrowed from the batch.
    Shared(&'b [u8]),
    /// Bytes made for this viewer alone (FLV sequence headers).
    Bytes(Bytes),
}

/// A protocol's per-viewer encoder for a [`Sink`].
pub trait Encoder: Send + 'static {
    /// Appends `batch`'s bytes as `parts`: headers into `own`, payloads
    /// borrowed from the batch. Returns the bytes it sent another way
    /// (RTSP's UDP tracks), for the viewer's count.
    fn encode<'b>(
        &mut self,
        batch: &'b [Delivery],
        now: Instant,
        own: &mut Vec<u8>,
        parts: &mut Vec<Part<'b>>,
    ) -> usize;
}

/// How a write is framed on the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// As it is (RTSP interleaved, HTTP/1.0's body to the close).
    Raw,
    /// HTTP/1.1 chunked (RFC 9112 §7.1): each write one chunk, never an
    /// empty one (that would end the body).
    Chunked,
}

/// Why a sink stopped: its viewer ended, or a write failed.
#[derive(Debug)]
pub enum End {
    Viewer(Ended),
    Write(io::Error),
}

/// A sink's state: the encoder, the viewer, and what its task owes the
/// socket.
pub struct State<E> {
    pub enc: E,
    /// The viewer (with the counting and the delivery delay).
    pub pump: Pump,
    /// Media goes out: set by the output once it has answered (RTSP's
    /// PLAY), cleared when it stops (PAUSE, the session's end).
    pub playing: bool,
    /// Bytes the socket did not take, in order: the task writes them
    /// before anything else.
    pending: Vec<u8>,
    /// The task owns the writing: offers leave the batches in the ring.
    writing: bool,
    end: Option<End>,
}

/// One viewer's sink: see the module doc.
pub struct Sink<E> {
    state: Mutex<State<E>>,
    /// The task's waker, for when it has to write (or end).
    waker: AtomicWaker,
    sock: Arc<TcpStream>,
    framing: Framing,
}

impl<E: Encoder> Sink<E> {
    pub fn new(enc: E, pump: Pump, sock: Arc<TcpStream>, framing: Framing) -> Sink<E> {
        Sink {
            state: Mutex::new(State {
                enc,
                pump,
                playing: false,
                pending: Vec::new(),
                writing: false,
                end: None,
            }),
            waker: AtomicWaker::new(),
            sock,
            framing,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State<E>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the sink with its viewer's fan-out: from now on the
    /// producer's task offers it each batch, until the guard is dropped.
    pub fn go_direct(self: &Arc<Self>) -> DirectGuard {
        let me: Arc<dyn Direct> = self.clone();
        self.lock().pump.viewer().go_direct(me)
    }

    /// Ready when the task has something to do: the rest of a write, or
    /// the viewer's end ([`Sink::poll_flush`] then does it).
    pub fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before looking: an offer that hands over after the
        // look wakes this waker.
        self.waker.register(cx.waker());
        if self.lock().writing {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The task's side: writes what is pending, then takes what the ring
    /// holds for the viewer until nothing is ready, and hands back to the
    /// offers (`Ready(Ok)`). A socket that takes nothing for `stall` (the
    /// caller's timer, kept across polls) fails the write; the viewer's
    /// end comes back as [`End::Viewer`] after what it had taken is
    /// written.
    pub fn poll_flush(
        &self,
        cx: &mut Context<'_>,
        stall: &mut Option<Pin<Box<Sleep>>>,
    ) -> Poll<Result<(), End>> {
        loop {
            let mut m = self.lock();
            if m.pending.is_empty() {
                if m.playing && m.end.is_none() {
                    m.drain(&self.sock, self.framing, Instant::now());
                }
                if m.pending.is_empty() {
                    *stall = None;
                    if let Some(e) = m.end.take() {
                        return Poll::Ready(Err(e));
                    }
                    // A batch sent from here on is offered, and its offer
                    // waits for this lock: none is missed.
                    m.writing = false;
                    return Poll::Ready(Ok(()));
                }
            }
            m.writing = true;
            match self.sock.try_write(&m.pending) {
                Ok(n) => {
                    m.pending.drain(..n);
                    *stall = None;
                    if m.pending.is_empty() {
                        m.pump.delivered();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(m);
                    if self.sock.poll_write_ready(cx).is_ready() {
                        continue;
                    }
                    let t = stall.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep(crate::net::WRITE_STALL))
                    });
                    ready!(t.as_mut().poll(cx));
                    return Poll::Ready(Err(End::Write(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "client accepted no data for {} s",
                            crate::net::WRITE_STALL.as_secs()
                        ),
                    ))));
                }
                Err(e) => return Poll::Ready(Err(End::Write(e))),
            }
        }
    }

    /// [`Sink::poll_flush`] for a task that awaits.
    pub async fn flush(&self) -> Result<(), End> {
        let mut stall = None;
        std::future::poll_fn(|cx| self.poll_flush(cx, &mut stall)).await
    }

    /// Writes `bytes` (the task's own: an RTSP reply) after what is
    /// pending, never inside a write of the media; then catches up.
    pub async fn write_own(&self, bytes: &[u8]) -> Result<(), End> {
        {
            let mut m = self.lock();
            match self.framing {
                Framing::Raw => m.pending.extend_from_slice(bytes),
                Framing::Chunked => chunk(&mut m.pending, bytes),
            }
            m.writing = true;
        }
        self.flush().await
    }
}

impl<E: Encoder> Direct for Sink<E> {
    fn offer(&self, now: Instant) {
        let mut m = self.lock();
        if !m.playing || m.writing || m.end.is_some() {
            return;
        }
        m.drain(&self.sock, self.framing, now);
        if !m.pending.is_empty() || m.end.is_some() {
            m.writing = true;
            drop(m);
            self.waker.wake();
        }
    }
}

/// `bytes` as one HTTP/1.1 chunk.
fn chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    out.extend_from_slice(chunk_size_line(bytes.len(), &mut [0u8; 18]));
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `len` in hex and CRLF (RFC 9112 §7.1 chunk-size), written into `buf`.
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in buf[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *b = b"0123456789ABCDEF"[nibble];
    }
    buf[digits..digits + 2].copy_from_slice(b"\r\n");
    &buf[..digits + 2]
}

impl<E> State<E> {
    /// Whether the task owns the writing now (tests look).
    #[cfg(test)]
    pub fn handed_over(&self) -> bool {
        self.writing
    }

    /// Bytes the task owes the socket (tests look).
    #[cfg(test)]
    pub fn owed(&self) -> usize {
        self.pending.len()
    }
}

impl<E: Encoder> State<E> {
    /// Sends what the viewer has ready, write by write, until nothing is
    /// ready, the socket is full (the rest is kept in `pending`), or the
    /// viewer ends. Never waits.
    fn drain(&mut self, sock: &TcpStream, framing: Framing, now: Instant) {
        let mut batch: Vec<Delivery> = Vec::new();
        while self.end.is_none() && self.pending.is_empty() {
            let mut bytes = 0;
            while batch.len() < MAX_BATCH && bytes < MAX_WRITE {
                match self.pump.viewer_mut().try_next() {
                    Some(Ok(d)) => {
                        if let Delivery::Frame(f) = &d {
                            bytes += f.payload.len();
                        }
                        batch.push(d);
                    }
                    // What was taken before the end still goes out.
                    Some(Err(e)) => {
                        self.end = Some(End::Viewer(e));
                        break;
                    }
                    None => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.send(sock, framing, &batch, now);
            batch.clear();
        }
    }

    /// One batch as one write.
    fn send(&mut self, sock: &TcpStream, framing: Framing, batch: &[Delivery], now: Instant) {
        // The encoder's own bytes go into a buffer made per write: the
        // allocator hands back memory that is still in cache, where one
        // kept per viewer is cold memory for each of 500 viewers in turn.
        let mut own: Vec<u8> = Vec::with_capacity(1024);
        let mut parts: Vec<Part> = Vec::new();
        let other = self.enc.encode(batch, now, &mut own, &mut parts);
        let total: usize = parts
            .iter()
            .map(|p| match p {
                Part::Own(r) => r.len(),
                Part::Shared(b) => b.len(),
                Part::Bytes(b) => b.len(),
            })
            .sum();
        // RFC 9112 §7.1: the chunk-size line, made on the stack (this runs
        // once per viewer per batch).
        let mut line = [0u8; 18];
        let head = match framing {
            Framing::Chunked if total > 0 => chunk_size_line(total, &mut line),
            _ => &[][..],
        };
        let mut slices: Vec<IoSlice> = Vec::with_capacity(parts.len() + 2);
        if !head.is_empty() {
            slices.push(IoSlice::new(head));
        }
        for p in &parts {
            slices.push(IoSlice::new(match p {
                Part::Own(r) => &own[r.clone()],
                Part::Shared(b) => b,
                Part::Bytes(b) => b,
            }));
        }
        if !head.is_empty() {
            slices.push(IoSlice::new(b"\r\n"));
        }
        self.pump.sent(other + total);
        let mut rest = &mut slices[..];
        if !rest.is_empty() {
            match sock.try_write_vectored(rest) {
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.end = Some(End::Write(e));
                    return;
                }
            }
        }
        if rest.is_empty() {
            // The batch's delay (`/api/metrics`) ends with its last byte.
            self.pump.delivered();
        } else {
            // The socket is full: the rest is the task's, copied (the
            // slow path; the borrowed payloads cannot outlive the batch).
            for s in rest.iter() {
                self.pending.extend_from_slice(s);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
