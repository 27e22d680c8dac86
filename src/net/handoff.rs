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
