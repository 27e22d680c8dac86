//! The one per-viewer body loop of the HTTP byte-stream outputs (HTTP-FLV,
//! MP4, MJPEG): the viewer's batches ([`crate::pump::Pump`]) go through its
//! output's encoder into a queue of chunks that hyper takes one at a time.
//! The pump counts them and ends their delivery delay when hyper asks for
//! more. (Stalls and shutdown are hyper's and `net::serve_http`'s: a body
//! is written by the HTTP connection.)

use std::collections::VecDeque;
use std::io;
use std::ops::ControlFlow;

use axum::body::Body;
use bytes::Bytes;

use crate::hub::fanout::Delivery;
use crate::hub::Viewer;
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
