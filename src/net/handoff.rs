//! An HTTP connection whose socket a response can take over after hyper
//! has written its head (HTTP-FLV, issue 17): the response's body then
//! writes the socket itself, from the producer's side
//! (`crate::pump::sink`), and hyper writes nothing until the body ends.
//!
//! hyper gets a [`SharedTcp`]: the socket behind an `Arc`, read and
//! written through tokio's readiness calls, so the body can hold it too.
//! The moment of the hand-over is hyper's flush: hyper flushes the socket
//! only when its own write buffer is empty (`Buffered::poll_flush`), and
//! after a body that is waiting (`Pending`) it buffers nothing more. So a
//! body that asks ([`Handoff::poll_ours`]) owns the socket from the first
//! flush after it asked, with the response head written before it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Who writes the connection.
#[derive(Default)]
enum Writer {
    #[default]
    Hyper,
    /// A body asked for the socket; it is its at hyper's next flush.
    Asked(Waker),
    Body,
}

/// One connection's hand-over: see the module doc.
#[derive(Default)]
pub struct Handoff {
    writer: Mutex<Writer>,
}

impl Handoff {
    /// A body's ask: ready once hyper has flushed everything before it.
    pub fn poll_ours(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match &*w {
            Writer::Body => Poll::Ready(()),
            _ => {
                *w = Writer::Asked(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The body that owned the socket is done (ended, failed or dropped):
    /// hyper writes again, and the next response's body (a keep-alive
    /// connection's next request) must ask anew, after its own head.
    pub fn give_back(&self) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Writer::Hyper;
    }

    /// hyper flushed: its buffer is empty.
    fn flushed(&self) {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Writer::Asked(_) = &*w {
            if let Writer::Asked(waker) = std::mem::replace(&mut *w, Writer::Body) {
                waker.wake();
            }
        }
    }
}

/// What a handler finds in a plain TCP connection's request extensions:
/// the socket, and its hand-over. (A Unix socket has none: its responses
/// are written by hyper.)
#[derive(Clone)]
pub struct HttpConn {
    pub sock: Arc<TcpStream>,
    pub handoff: Arc<Handoff>,
}

/// The socket as hyper reads and writes it; see the module doc.
pub struct SharedTcp {
    conn: HttpConn,
}

impl SharedTcp {
    pub fn new(sock: TcpStream) -> SharedTcp {
        SharedTcp {
            conn: HttpConn {
                sock: Arc::new(sock),
                handoff: Arc::default(),
            },
        }
    }

    pub fn conn(&self) -> &HttpConn {
        &self.conn
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.conn.sock.poll_read_ready(cx))?;
            match self.conn.sock.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.conn.sock.poll_write_ready(cx))?;
            match self.conn.sock.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.conn.sock.poll_write_ready(cx))?;
            match self.conn.sock.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: every write went to the socket.
        self.conn.handoff.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = socket2::SockRef::from(&*self.conn.sock).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match r {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The socket is a body's from hyper's first flush after it asked,
    /// not before; given back, the next body must ask and wait again.
    #[test]
    fn a_body_owns_the_socket_from_the_flush_after_it_asked_until_it_gives_it_back() {
        let h = Handoff::default();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        h.flushed(); // hyper's flushes before the ask hand nothing over
        assert!(h.poll_ours(&mut cx).is_pending());
        assert_eq!(woken.0.load(Ordering::Relaxed), 0);
        h.flushed();
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            1,
            "the flush wakes the body"
        );
        assert!(h.poll_ours(&mut cx).is_ready());
        h.flushed();
        assert!(h.poll_ours(&mut cx).is_ready(), "it stays the body's");
        h.give_back();
        assert!(h.poll_ours(&mut cx).is_pending(), "the next body asks anew");
        h.flushed();
        assert!(h.poll_ours(&mut cx).is_ready());
    }
}
