//! The lower transports of a session (RFC 2326 §12.39): RTP and RTCP
//! interleaved on the RTSP connection (§10.12), or a UDP port pair of
//! ours per track.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rtsp_types::headers::{RtpLowerTransport, Transport as RtspTransport, Transports};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::conn::Reply;

pub(super) enum Transport {
    /// §10.12: RTP and RTCP on these channels of the RTSP connection.
    Tcp { rtp: u8, rtcp: u8 },
    Udp {
        rtp: Arc<UdpSocket>,
        rtcp: Arc<UdpSocket>,
        to_rtp: SocketAddr,
        to_rtcp: SocketAddr,
        /// Reads the client's RTCP (receiver reports) to see it is alive.
        _listener: AbortOnDrop,
    },
}

pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One datagram from pieces, without copying them together; a full socket
/// buffer drops the packet, as UDP would anyway, rather than wait.
pub(super) fn send_udp(sock: &UdpSocket, to: SocketAddr, parts: &[&[u8]]) {
    let bufs: Vec<IoSlice> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let to = socket2::SockAddr::from(to);
    let _ = sock.try_io(tokio::io::Interest::WRITABLE, || {
        socket2::SockRef::from(sock).send_to_vectored(&bufs, &to)
    });
}

/// The lower transport a SETUP settled on (§12.39).
pub(super) enum Lower {
    /// Interleaved channels on the RTSP connection.
    Tcp { rtp: u8, rtcp: u8 },
    /// A fresh server port pair; `client` is the client's (RTP, RTCP).
    Udp {
        rtp: Arc<UdpSocket>,
        rtcp: Arc<UdpSocket>,
        client: (u16, u16),
    },
}

impl Lower {
    /// The Transport header of the answer, without mode or ssrc.
    pub(super) fn answer(&self) -> String {
        match self {
            Lower::Tcp { rtp, rtcp } => format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp}"),
            Lower::Udp { rtp, rtcp, client } => {
                let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).unwrap_or(0);
                format!(
                    "RTP/AVP;unicast;client_port={}-{};server_port={}-{}",
                    client.0,
                    client.1,
                    port(rtp),
                    port(rtcp)
                )
            }
        }
    }
}

/// Picks the first RTP transport the client offers, for track `index`.
pub(super) async fn negotiate(
    transports: &Transports,
    index: usize,
    local_ip: std::net::IpAddr,
) -> Result<Lower, Reply> {
    let Some(t) = transports.iter().find_map(|t| match t {
        RtspTransport::Rtp(r) => Some(r),
        RtspTransport::Other(_) => None,
    }) else {
        return Err(Reply::error(
            461,
            "Unsupported Transport",
            "only RTP/AVP transports are supported",
        ));
    };
    if t.lower_transport == Some(RtpLowerTransport::Tcp) {
        let (rtp, rtcp) = match t.params.interleaved {
            Some((a, b)) => (a, b.unwrap_or(a.wrapping_add(1))),
            None => (index as u8 * 2, index as u8 * 2 + 1),
        };
        return Ok(Lower::Tcp { rtp, rtcp });
    }
    let Some((crtp, crtcp)) = t.params.client_port else {
        return Err(Reply::error(
            461,
            "Unsupported Transport",
            "UDP needs client_port",
        ));
    };
    let (rtp, rtcp) = udp_pair(local_ip)
        .await
        .map_err(|e| Reply::error(500, "Internal Server Error", format!("no UDP ports: {e}")))?;
    Ok(Lower::Udp {
        rtp,
        rtcp,
        client: (crtp, crtcp.unwrap_or(crtp.wrapping_add(1))),
    })
}

/// A server RTP/RTCP socket pair on the connection's local address.
async fn udp_pair(ip: std::net::IpAddr) -> io::Result<(Arc<UdpSocket>, Arc<UdpSocket>)> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    Ok((Arc::new(rtp), Arc::new(rtcp)))
}

/// Drains the client's RTCP on a UDP session; each packet is a sign of life.
pub(super) async fn watch_rtcp(sock: Arc<UdpSocket>, last_seen: Arc<AtomicU64>, opened: Instant) {
    let mut buf = [0u8; 1500];
    while sock.recv_from(&mut buf).await.is_ok() {
        last_seen.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
