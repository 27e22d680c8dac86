//! ICE transport for every peer on one port (`webrtc.listen`, go2rtc's
//! `:8555`), over UDP and over TCP (RFC 6544 passive candidates, RFC 4571
//! framing).
//!
//! Packets are routed to peers here, so one peer never reads another's
//! traffic: a STUN Binding request by the first half of its USERNAME, which
//! is our ufrag (RFC 8445 §7.2.2), and everything after it (DTLS, SRTP,
//! consent checks) by the local/remote address pair that request came on.
//! A TCP connection belongs to the peer its first request names.
//!
//! A peer whose queue is full loses UDP packets, as the network would; the
//! readers never wait on a peer.
//!
//! What str0m gives a peer in one poll (a frame's 5-20 RTP packets, all of
//! one size but the last: its packetizer cuts at the MTU) leaves in as few
//! syscalls as it can: one `sendmsg` with UDP GSO (`UDP_SEGMENT`, Linux
//! 4.18) per run of equal-sized packets to one address, which the kernel
//! cuts back into datagrams. A packet per `sendto` was 43 % of our CPU at
//! 50 peers (each goes down the IP stack, and on loopback wakes the
//! receiver, alone). A kernel or device that refuses GSO turns it off for
//! the transport, and packets go one by one again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use str0m::net::{Protocol, TcpType};
use str0m::Candidate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Packets waiting for one peer's task.
const PEER_QUEUE: usize = 512;
/// Frames waiting to be written on one TCP connection.
const TCP_QUEUE: usize = 512;
/// A TCP connection must name its peer (a Binding request) within this.
const TCP_FIRST: Duration = Duration::from_secs(10);
/// A peer's browser checks consent every ~5 s (RFC 7675 §5.1).
const TCP_IDLE: Duration = Duration::from_secs(30);
/// A TCP reader that stops reading loses its connection.
const TCP_WRITE_STALL: Duration = Duration::from_secs(5);
/// At most this many TCP connections at once (each names a peer or goes).
const TCP_CONNECTIONS: usize = 256;
/// How long a `webrtc.candidates` name may take to resolve.
const RESOLVE: Duration = Duration::from_secs(2);
/// Datagrams in one GSO send: the kernel's `UDP_MAX_SEGMENTS` was 64
/// before Linux 5.5 (128 since).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO send: a UDP payload's limit over IPv4 is 65 507
/// (65 535 less the IP and UDP headers); kept under it with room.
const GSO_MAX_BYTES: usize = 60_000;

/// One packet for a peer, in the shape str0m's `Receive` wants.
pub struct Packet {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
    /// The TCP connection it came on: where our packets to `source` go.
    pub tcp: Option<mpsc::Sender<Vec<u8>>>,
}

#[derive(Clone)]
struct Route {
    peer: u64,
    tx: mpsc::Sender<Packet>,
}

#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Route>,
    /// (our address, theirs) of UDP packets.
    by_pair: HashMap<(SocketAddr, SocketAddr), Route>,
}

/// The sockets peers are reached on, shared by all of them (or, with
/// `webrtc.listen: ""`, one UDP socket for one peer).
pub struct Transport {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Our passive TCP candidates: each address of ours, the listener's port.
    tcp: Vec<SocketAddr>,
    /// `webrtc.candidates`.
    extra: Vec<(String, u16)>,
    routes: Mutex<Routes>,
    next_peer: AtomicU64,
    stop: CancellationToken,
    /// Cleared once the kernel refuses a GSO send (an old kernel, or a
    /// device without UDP checksum offload answers EIO).
    gso: AtomicBool,
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("webrtc.listen: cannot listen on {proto} {addr}: {reason}")]
pub struct BindError {
    proto: &'static str,
    addr: SocketAddr,
    reason: std::io::Error,
}

impl Transport {
    /// Binds `webrtc.listen`: a UDP socket on each of our addresses when
    /// it names none (an unconnected socket cannot tell which address a
    /// packet came to, and str0m must know), and one TCP listener.
    pub async fn bind(cfg: &crate::config::WebRtcConfig) -> Result<Arc<Transport>, BindError> {
        let Some(listen) = cfg.listen else {
            return Err(BindError {
                proto: "udp",
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                reason: std::io::Error::other("no address (webrtc.listen is empty)"),
            });
        };
        let ips = if listen.ip().is_unspecified() {
            interface_ips(listen.is_ipv6())
        } else {
            vec![listen.ip()]
        };
        let mut udp = Vec::new();
        if cfg.udp {
            for ip in &ips {
                udp.push(bind_udp(SocketAddr::new(*ip, listen.port())).await?);
            }
        }
        let mut tcp = Vec::new();
        let listener = if cfg.tcp {
            let l = TcpListener::bind(listen)
                .await
                .map_err(|reason| BindError {
                    proto: "tcp",
                    addr: listen,
                    reason,
                })?;
            let port = l.local_addr().map(|a| a.port()).unwrap_or(listen.port());
            tcp = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            Some(l)
        } else {
            None
        };
        let t = Transport::start(udp, tcp, cfg.candidates.clone());
        if let Some(l) = listener {
            tokio::spawn(accept_loop(l, Arc::downgrade(&t), t.stop.clone()));
        }
        Ok(t)
    }

    /// One UDP socket on a free port of `ip`, for one peer
    /// (`webrtc.listen: ""`). It closes when the peer's task ends.
    pub async fn ephemeral(ip: IpAddr) -> Result<Arc<Transport>, BindError> {
        let udp = bind_udp(SocketAddr::new(ip, 0)).await?;
        Ok(Transport::start(vec![udp], Vec::new(), Vec::new()))
    }

    /// The transport, with a reader on each UDP socket.
    fn start(
        udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
        tcp: Vec<SocketAddr>,
        extra: Vec<(String, u16)>,
    ) -> Arc<Transport> {
        let t = Arc::new(Transport {
            udp,
            tcp,
            extra,
            routes: Mutex::default(),
            next_peer: AtomicU64::new(0),
            stop: CancellationToken::new(),
            gso: AtomicBool::new(cfg!(target_os = "linux")),
        });
        for (local, sock) in &t.udp {
            tokio::spawn(udp_loop(
                sock.clone(),
                *local,
                Arc::downgrade(&t),
                t.stop.clone(),
            ));
        }
        t
    }

    /// The UDP addresses we listen on (for the log line at start-up).
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|(a, _)| *a).collect()
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Routes packets for `ufrag` to the returned peer until it is dropped.
    pub fn register(self: &Arc<Self>, ufrag: &str) -> Registration {
        let peer = self.next_peer.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        self.routes
            .lock()
            .unwrap()
            .by_ufrag
            .insert(ufrag.to_string(), Route { peer, tx });
        Registration {
            transport: self.clone(),
            peer,
            rx,
            tcp: HashMap::new(),
            outbox: Vec::new(),
        }
    }

    /// Our candidates for a peer at `peer_ip`: every UDP socket and TCP
    /// address of ours (loopback only to a loopback peer), then
    /// `webrtc.candidates` as server-reflexive ones based on the socket
    /// that routes towards them (a router's port forward lands there).
    pub async fn candidates(&self, peer_ip: IpAddr) -> Vec<Candidate> {
        let reachable = |a: &SocketAddr| !a.ip().is_loopback() || peer_ip.is_loopback();
        let mut out = Vec::new();
        for (a, _) in self.udp.iter().filter(|(a, _)| reachable(a)) {
            out.extend(Candidate::host(*a, "udp").ok());
        }
        for a in self.tcp.iter().filter(|a| reachable(a)) {
            out.extend(
                Candidate::builder()
                    .tcp()
                    .host(*a)
                    .tcptype(TcpType::Passive)
                    .build()
                    .ok(),
            );
        }
        for (host, port) in &self.extra {
            let addrs = match tokio::time::timeout(
                RESOLVE,
                tokio::net::lookup_host((host.as_str(), *port)),
            )
            .await
            {
                Ok(Ok(a)) => a.collect::<Vec<_>>(),
                Ok(Err(e)) => {
                    tracing::warn!(candidate = %host, error = %e, "webrtc.candidates: cannot resolve");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(candidate = %host, "webrtc.candidates: no answer from DNS");
                    continue;
                }
            };
            for addr in addrs {
                if out.iter().any(|c| c.addr() == addr) {
                    continue;
                }
                let towards = super::local_ip_towards(addr.ip());
                let Some((base, _)) = self
                    .udp
                    .iter()
                    .find(|(a, _)| a.ip() == towards)
                    .or_else(|| self.udp.iter().find(|(a, _)| a.is_ipv4() == addr.is_ipv4()))
                else {
                    continue;
                };
                out.extend(
                    Candidate::builder()
                        .udp()
                        .server_reflexive(addr, *base)
                        .build()
                        .ok(),
                );
            }
        }
        out
    }

    /// Where a packet from `remote` to `local` goes.
    fn route(
        &self,
        proto: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> Option<Route> {
        let mut routes = self.routes.lock().unwrap();
        if let Some(user) = stun_binding_username(data) {
            let ours = user.split(':').next().unwrap_or_default();
            if let Some(r) = routes.by_ufrag.get(ours).cloned() {
                if proto == Protocol::Udp {
                    routes.by_pair.insert((local, remote), r.clone());
                }
                return Some(r);
            }
        }
        if proto == Protocol::Udp {
            return routes.by_pair.get(&(local, remote)).cloned();
        }
        None
    }

    fn forget(&self, peer: u64) {
        let mut routes = self.routes.lock().unwrap();
        routes.by_ufrag.retain(|_, r| r.peer != peer);
        routes.by_pair.retain(|_, r| r.peer != peer);
    }
}

/// A peer's end of the transport: its packets, and the way back.
pub struct Registration {
    transport: Arc<Transport>,
    peer: u64,
    pub rx: mpsc::Receiver<Packet>,
    /// The TCP connections this peer was reached on, by their address.
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// UDP packets queued by [`Registration::queue`] until the next
    /// [`Registration::flush`]: (our address, theirs, packet).
    outbox: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Registration {
    /// Remembers the connection a TCP packet came on (str0m answers to its
    /// source address).
    pub fn saw(&mut self, p: &Packet) {
        if let Some(tx) = &p.tcp {
            self.tcp.entry(p.source).or_insert_with(|| tx.clone());
        }
    }

    /// Sends what str0m asked to: never waits (a full socket buffer or
    /// queue loses the packet, as UDP would).
    pub fn send(&self, proto: Protocol, source: SocketAddr, to: SocketAddr, data: &[u8]) {
        match proto {
            Protocol::Udp => {
                if let Some((_, s)) = self.transport.udp.iter().find(|(a, _)| *a == source) {
                    let _ = s.try_send_to(data, to);
                }
            }
            _ => {
                if let Some(tx) = self.tcp.get(&to) {
                    let _ = tx.try_send(data.to_vec());
                }
            }
        }
    }
}

impl Registration {
    /// Like [`Registration::send`], but a UDP packet waits for
    /// [`Registration::flush`], to leave with the others of its poll.
    pub fn queue(&mut self, proto: Protocol, source: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        match proto {
            Protocol::Udp => self.outbox.push((source, to, data)),
            _ => self.send(proto, source, to, &data),
        }
    }

    /// Sends the queued UDP packets, in order: a run that GSO can carry
    /// in one `sendmsg`, the rest one by one. Never waits: a full socket
    /// buffer loses the packets, as UDP would.
    pub fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let keys: Vec<_> = self
            .outbox
            .iter()
            .map(|(from, to, p)| (*from, *to, p.len()))
            .collect();
        for run in gso_runs(&keys) {
            let (source, to, _) = &self.outbox[run.start];
            let Some((_, sock)) = self.transport.udp.iter().find(|(a, _)| a == source) else {
                continue;
            };
            let packets = &self.outbox[run.clone()];
            if packets.len() > 1 && self.transport.gso.load(Ordering::Relaxed) {
                match send_gso(sock, *to, packets) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        if self.transport.gso.swap(false, Ordering::Relaxed) {
                            tracing::info!(local = %source, peer = %to, error = %e, "webrtc: the kernel refuses UDP GSO; sending packets one by one");
                        }
                    }
                }
            }
            for (_, to, p) in packets {
                let _ = sock.try_send_to(p, *to);
            }
        }
        self.outbox.clear();
    }
}

/// Splits packets (our address, theirs, size) into what one GSO send can
/// carry, in order: packets to one address, all of the first one's size
/// but the last, which may be shorter (the kernel cuts the buffer at every
/// `size` bytes, udp(7) `UDP_SEGMENT`), within [`GSO_MAX_SEGMENTS`] and
/// [`GSO_MAX_BYTES`]. A run of one is a plain datagram.
pub fn gso_runs(packets: &[(SocketAddr, SocketAddr, usize)]) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < packets.len() {
        let (from, to, size) = packets[start];
        let mut end = start + 1;
        let mut bytes = size;
        while let Some(&(f, t, n)) = packets.get(end) {
            let fits = f == from
                && t == to
                && n <= size
                && n > 0
                && end - start < GSO_MAX_SEGMENTS
                && bytes + n <= GSO_MAX_BYTES;
            if !fits {
                break;
            }
            end += 1;
            bytes += n;
            if n < size {
                break; // a shorter one ends the run
            }
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

/// Equal-sized packets (the last may be shorter) to one address in one
/// `sendmsg`, the kernel cutting them apart at the first one's size.
#[cfg(target_os = "linux")]
fn send_gso(
    sock: &UdpSocket,
    to: SocketAddr,
    packets: &[(SocketAddr, SocketAddr, Vec<u8>)],
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let segment = u16::try_from(packets[0].2.len()).map_err(std::io::Error::other)?;
    let iov: Vec<IoSlice> = packets.iter().map(|(_, _, p)| IoSlice::new(p)).collect();
    let addr = SockaddrStorage::from(to);
    sock.try_io(tokio::io::Interest::WRITABLE, || {
        sendmsg(
            sock.as_raw_fd(),
            &iov,
            &[ControlMessage::UdpGsoSegments(&segment)],
            MsgFlags::empty(),
            Some(&addr),
        )
        .map(drop)
        .map_err(std::io::Error::from)
    })
}

#[cfg(not(target_os = "linux"))]
fn send_gso(
    _: &UdpSocket,
    _: SocketAddr,
    _: &[(SocketAddr, SocketAddr, Vec<u8>)],
) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.transport.forget(self.peer);
    }
}

async fn bind_udp(addr: SocketAddr) -> Result<(SocketAddr, Arc<UdpSocket>), BindError> {
    let sock = UdpSocket::bind(addr).await.map_err(|reason| BindError {
        proto: "udp",
        addr,
        reason,
    })?;
    Ok((sock.local_addr().unwrap_or(addr), Arc::new(sock)))
}

async fn udp_loop(
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    t: Weak<Transport>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let r = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = stop.cancelled() => return,
        };
        let (n, remote) = match r {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on some systems; not fatal.
                tracing::debug!(local = %local, error = %e, "webrtc udp receive");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(t) = t.upgrade() else { return };
        let data = &buf[..n];
        if let Some(r) = t.route(Protocol::Udp, local, remote, data) {
            let _ = r.tx.try_send(Packet {
                proto: Protocol::Udp,
                source: remote,
                destination: local,
                contents: data.to_vec(),
                tcp: None,
            });
        }
    }
}

async fn accept_loop(l: TcpListener, t: Weak<Transport>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    // EMFILE backs off as every listener does (crate::net), and a flood
    // over the cap is one warning, not one per connection.
    let mut backoff = crate::net::Backoff::default();
    let mut refused = 0u64;
    loop {
        let r = tokio::select! {
            r = l.accept() => r,
            _ = stop.cancelled() => return,
        };
        let (stream, remote) = match r {
            Ok(x) => x,
            Err(e) => {
                let (wait, first) = backoff.failed();
                if first {
                    tracing::warn!(error = %e, "webrtc tcp: accept failed; backing off");
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if let Some(n) = backoff.succeeded() {
            tracing::info!(failures = n, "webrtc tcp: accepting connections again");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused == 1 {
                tracing::warn!(peer = %remote, max = TCP_CONNECTIONS, "webrtc tcp: too many connections, refusing");
            }
            continue;
        };
        if refused > 0 {
            tracing::info!(refused, "webrtc tcp: below the cap again");
            refused = 0;
        }
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tcp_conn(stream, t) => {}
                _ = stop.cancelled() => {}
            }
            drop(slot);
        });
    }
}

/// One ICE-TCP connection: RFC 4571 frames (a 16-bit length, then the
/// packet) both ways.
async fn tcp_conn(stream: TcpStream, t: Weak<Transport>) {
    let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    let writer = async move {
        while let Some(m) = wrx.recv().await {
            let Ok(len) = u16::try_from(m.len()) else {
                continue;
            };
            let mut f = Vec::with_capacity(2 + m.len());
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&m);
            match tokio::time::timeout(TCP_WRITE_STALL, wr.write_all(&f)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    };
    let reader = async move {
        let mut route: Option<Route> = None;
        loop {
            let limit = if route.is_some() { TCP_IDLE } else { TCP_FIRST };
            let frame = match tokio::time::timeout(limit, read_frame(&mut rd)).await {
                Ok(Ok(f)) => f,
                _ => return,
            };
            let r = match &route {
                Some(r) => r.clone(),
                None => {
                    let Some(t) = t.upgrade() else { return };
                    match t.route(Protocol::Tcp, local, remote, &frame) {
                        Some(r) => route.insert(r).clone(),
                        None => {
                            tracing::debug!(peer = %remote, "webrtc tcp: not a request for a peer of ours");
                            return;
                        }
                    }
                }
            };
            let p = Packet {
                proto: Protocol::Tcp,
                source: remote,
                destination: local,
                contents: frame,
                tcp: Some(wtx.clone()),
            };
            if let Err(mpsc::error::TrySendError::Closed(_)) = r.tx.try_send(p) {
                return; // the peer is gone
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
}

async fn read_frame(rd: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    rd.read_exact(&mut len).await?;
    let mut v = vec![0u8; u16::from_be_bytes(len) as usize];
    rd.read_exact(&mut v).await?;
    Ok(v)
}

/// The USERNAME of a STUN Binding request (RFC 8489 §5 header, §14.3
/// USERNAME), without parsing anything else: `None` for anything that is
/// not one, however malformed.
pub fn stun_binding_username(p: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    const BINDING_REQUEST: u16 = 0x0001;
    const USERNAME: u16 = 0x0006;
    if p.len() < 20 || p[4..8] != MAGIC {
        return None;
    }
    if u16::from_be_bytes([p[0], p[1]]) != BINDING_REQUEST {
        return None;
    }
    let len = u16::from_be_bytes([p[2], p[3]]) as usize;
    let mut attrs = p.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let n = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let value = attrs.get(4..4 + n)?;
        if kind == USERNAME {
            return std::str::from_utf8(value).ok();
        }
        // Attribute values are padded to 4 bytes (§14).
        attrs = attrs.get(4 + n.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

/// The addresses of our interfaces that are up, of one family; IPv6
/// link-local ones are left out (they need a scope id to be used).
fn interface_ips(v6: bool) -> Vec<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![if v6 {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
        }];
    };
    let mut out = Vec::new();
    for ifa in addrs {
        if !ifa.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(a) = ifa.address else { continue };
        let ip = if let Some(s) = a.as_sockaddr_in() {
            IpAddr::from(s.ip())
        } else if let Some(s) = a.as_sockaddr_in6() {
            IpAddr::from(s.ip())
        } else {
            continue;
        };
        let link_local = matches!(ip, IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80);
        if ip.is_ipv6() == v6 && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The fuzz target's body (`fuzz/fuzz_targets/stun_username.rs`).
pub fn fuzz(data: &[u8]) {
    if let Some(u) = stun_binding_username(data) {
        assert!(u.len() <= data.len());
    }
}

#[cfg(test)]
mod tests;
