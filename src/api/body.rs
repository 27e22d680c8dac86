//! The one per-viewer body loop of the HTTP byte-stream outputs (HTTP-FLV,
//! MP4, MJPEG): the viewer's deliveries go through its output's encoder
//! into a queue of chunks that hyper takes one at a time. Here, once for
//! all of them: the queueing, the byte counting, the delivery delay
//! (`ViewerStats::delivered`) and the end of the viewer. (Stalls and
//! shutdown are hyper's and `net::serve_http`'s: a body is written by the
//! HTTP connection.)

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use axum::body::Body;
use bytes::Bytes;

use crate::hub::fanout::Delivery;
use crate::hub::Viewer;

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
        viewer: Viewer,
        queue: VecDeque<Bytes>,
        encode: F,
    }
    let st = St {
        viewer,
        queue: queued,
        encode,
    };
    Body::from_stream(futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(b) = st.queue.pop_front() {
                st.viewer
                    .stats()
                    .bytes
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                return Some((Ok::<_, io::Error>(b), st));
            }
            // Polled again with the queue empty: hyper took the last
            // frame's chunks, so that frame's delay ends here.
            st.viewer.stats().delivered();
            match st.viewer.next().await {
                Err(e) => {
                    tracing::debug!(error = %e, "{output} viewer ended");
                    return None;
                }
                Ok(d) => {
                    if (st.encode)(d, &mut st.queue).is_break() {
                        return None;
                    }
                }
            }
        }
    }))
}
