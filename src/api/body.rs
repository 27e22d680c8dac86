//! The per-viewer bodies of the HTTP byte-stream outputs. [`body`] (MP4,
//! MJPEG, and HTTP-FLV where the socket cannot be taken over): the
//! viewer's batches ([`crate::pump::Pump`]) go through its output's
//! encoder into a queue of chunks that hyper takes one at a time. The
//! pump counts them and ends their delivery delay when hyper asks for
//! more. (Stalls and shutdown are hyper's and `net::serve_http`'s: a body
//! is written by the HTTP connection.) [`direct`] (HTTP-FLV over TCP):
//! the socket is taken over after the head, and written from the
//! producer's side.

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame};
use tokio::time::Sleep;

use crate::hub::fanout::{Delivery, DirectGuard};
use crate::hub::Viewer;
use crate::net::handoff::HttpConn;
use crate::pump::sink::{Encoder, End, Sink};
use crate::pump::Pump;

/// `viewer`'s body: `queued` first (what was read before the answer was
/// chosen), then what `encode` makes of each delivery, until the viewer
/// ends or `encode` says to stop (it logs why). `output` names the viewer
/// in the log.
pub(super) fn body<F>(
    output: &'static str,
    viewer: Viewer,
    queued: VecDeque<Bytes>,
    encode: F,
) -> Body
where
    F: FnMut(Delivery, &mut VecDeque<Bytes>) -> ControlFlow<()> + Send + 'static,
{
    struct St<F> {
        pump: Pump,
        batch: Vec<Delivery>,
        queue: VecDeque<Bytes>,
        encode: F,
        stop: bool,
    }
    let st = St {
        pump: Pump::new(viewer),
        batch: Vec::new(),
        queue: queued,
        encode,
        stop: false,
    };
    Body::from_stream(futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(b) = st.queue.pop_front() {
                st.pump.sent(b.len());
                return Some((Ok::<_, io::Error>(b), st));
            }
            if st.stop {
                return None;
            }
            // Polled again with the queue empty: hyper took the last
            // batch's chunks, so that batch's delay ends here.
            st.pump.delivered();
            if let Err(e) = st.pump.next_batch(&mut st.batch).await {
                tracing::debug!(error = %e, "{output} viewer ended");
                return None;
            }
            for d in st.batch.drain(..) {
                if (st.encode)(d, &mut st.queue).is_break() {
                    // What came before the stop still goes out.
                    st.stop = true;
                    break;
                }
            }
        }
    }))
}

/// A body that writes its connection's socket itself, from the producer's
/// side (issue 17; `pump::sink`, `net::handoff`): once hyper has written
/// the head, the sink is registered with the fan-out, whose offers write
/// each batch in the producer's task. hyper polls this body only when the
/// sink needs its task: to write what a full socket left, or to end. The
/// body ends when the viewer does (hyper then writes the chunked body's
/// last chunk); a failed or stalled write fails it, and hyper drops the
/// connection.
pub(super) fn direct<E: Encoder>(output: &'static str, conn: HttpConn, sink: Arc<Sink<E>>) -> Body {
    Body::new(Direct {
        output,
        conn,
        sink,
        guard: None,
        stall: None,
    })
}

struct Direct<E: Encoder> {
    output: &'static str,
    conn: HttpConn,
    sink: Arc<Sink<E>>,
    /// The registration with the fan-out, once the socket is ours.
    guard: Option<DirectGuard>,
    stall: Option<Pin<Box<Sleep>>>,
}

impl<E: Encoder> Direct<E> {
    /// No offer writes after this: hyper may write the body's end, and
    /// the connection's next response.
    fn stop(&mut self) {
        self.sink.lock().playing = false;
        self.guard = None;
        self.conn.handoff.give_back();
    }
}

impl<E: Encoder> Drop for Direct<E> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<E: Encoder> HttpBody for Direct<E> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.guard.is_none() {
            ready!(this.conn.handoff.poll_ours(cx));
            this.sink.lock().playing = true;
            this.guard = Some(this.sink.go_direct());
        }
        loop {
            match ready!(this.sink.poll_flush(cx, &mut this.stall)) {
                Ok(()) => ready!(this.sink.poll_wake(cx)),
                Err(End::Viewer(e)) => {
                    tracing::debug!(error = %e, "{} viewer ended", this.output);
                    this.stop();
                    return Poll::Ready(None);
                }
                Err(End::Write(e)) => {
                    this.stop();
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}
