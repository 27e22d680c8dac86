//! N WebRTC viewers of one stream, for `scripts/bench-webrtc`.
//!
//! Each peer is a str0m `Rtc` on a UDP socket of its own, in a thread of
//! its own: it offers recvonly video and audio by WHEP (a raw
//! `application/sdp` POST, which streamvisor's and go2rtc's
//! `/api/webrtc?src=` and MediaMTX's `/NAME/whep` all take), does ICE,
//! DTLS and SRTP, and counts the RTP it receives. Nothing is depacketized
//! or decoded (str0m's RTP mode), so a peer costs the client little and
//! the server's cost is what is measured.
//!
//! What is checked: every peer connected and received video; per peer,
//! kbit/s of RTP payload over the measuring window and RTP packets missing
//! by sequence number. One JSON line on stdout, the summary on stderr.
//!
//! Usage: webrtc-load URL PEERS SECONDS [WARMUP_SECONDS]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};

/// What one peer saw.
#[derive(Default, Clone)]
struct Peer {
    error: Option<String>,
    connected: bool,
    /// RTP payload bytes and packets inside the measuring window.
    bytes: u64,
    packets: u64,
    /// Video packets missing by sequence number (whole run).
    lost: u64,
    video_packets: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: webrtc-load URL PEERS SECONDS [WARMUP_SECONDS]");
        std::process::exit(2);
    }
    let url = args[0].clone();
    let peers: usize = args[1].parse().expect("PEERS");
    let seconds: f64 = args[2].parse().expect("SECONDS");
    let warmup: f64 = args.get(3).map_or(3.0, |s| s.parse().expect("WARMUP"));
    let start = Instant::now();
    let window_from = start + Duration::from_secs_f64(warmup);
    let end = window_from + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..peers)
        .map(|i| {
            let url = url.clone();
            std::thread::Builder::new()
                .name(format!("peer{i}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut p = Peer::default();
                    if let Err(e) = run_peer(&url, window_from, end, &mut p) {
                        p.error = Some(e);
                    }
                    p
                })
                .expect("spawn")
        })
        .collect();
    let results: Vec<Peer> = threads
        .into_iter()
        .map(|t| {
            t.join().unwrap_or_else(|_| Peer {
                error: Some("panicked".into()),
                ..Default::default()
            })
        })
        .collect();
    let mut kbps: Vec<f64> = results
        .iter()
        .map(|p| p.bytes as f64 * 8.0 / 1000.0 / seconds)
        .collect();
    kbps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let received = results.iter().filter(|p| p.video_packets > 0).count();
    let connected = results.iter().filter(|p| p.connected).count();
    let lost: u64 = results.iter().map(|p| p.lost).sum();
    let video: u64 = results.iter().map(|p| p.video_packets).sum();
    let packets: u64 = results.iter().map(|p| p.packets).sum();
    let errors: Vec<String> = results.iter().filter_map(|p| p.error.clone()).collect();
    let median = kbps.get(kbps.len() / 2).copied().unwrap_or(0.0);
    let min = kbps.first().copied().unwrap_or(0.0);
    println!(
        "{{\"peers\":{peers},\"connected\":{connected},\"received\":{received},\"kbps_min\":{min:.0},\"kbps_median\":{median:.0},\"kbps_max\":{:.0},\"packets\":{packets},\"video_packets\":{video},\"lost\":{lost},\"errors\":{}}}",
        kbps.last().copied().unwrap_or(0.0),
        errors.len()
    );
    if let Some(e) = errors.first() {
        eprintln!("webrtc-load: {} peers failed, the first: {e}", errors.len());
    }
}

fn run_peer(url: &str, window_from: Instant, end: Instant, p: &mut Peer) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    // RTP mode: packets are handed over as they come, not depacketized.
    // What the servers send (H.264/H.265, Opus/G.711). An offer with
    // str0m's VP8/VP9/AV1 too is refused by MediaMTX 1.16 ("codecs not
    // supported by client").
    let mut rtc = RtcConfig::new()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_h264(true)
        .enable_h265(true)
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .build(Instant::now());
    let cand = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
    rtc.add_local_candidate(cand);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let answer = post_sdp(url, &offer.to_sdp_string())?;
    let debug = std::env::var_os("WEBRTC_LOAD_DEBUG").is_some();
    if debug {
        eprintln!("--- offer\n{}--- answer\n{answer}", offer.to_sdp_string());
    }
    let video_pts = video_pts(&answer);
    let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| format!("answer: {e}"))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("accept answer: {e}"))?;
    let mut buf = vec![0u8; 2000];
    let mut last_seq: Option<u64> = None;
    while Instant::now() < end {
        let timeout = match rtc.poll_output().map_err(|e| format!("rtc: {e}"))? {
            Output::Timeout(t) => t,
            Output::Transmit(t) => {
                let _ = socket.send_to(&t.contents, t.destination);
                continue;
            }
            Output::Event(e) => {
                match e {
                    Event::Connected => p.connected = true,
                    Event::IceConnectionStateChange(st) if debug => eprintln!("ice: {st:?}"),
                    Event::RtpPacket(r) => {
                        let now = Instant::now();
                        if now >= window_from {
                            p.packets += 1;
                            p.bytes += r.payload.len() as u64;
                        }
                        if video_pts.contains(&(*r.header.payload_type)) {
                            p.video_packets += 1;
                            let seq = *r.seq_no;
                            if let Some(last) = last_seq {
                                if seq > last + 1 {
                                    p.lost += seq - last - 1;
                                }
                            }
                            last_seq = Some(last_seq.map_or(seq, |l| l.max(seq)));
                        }
                    }
                    _ => {}
                }
                continue;
            }
        };
        let now = Instant::now();
        let wait = timeout
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), Duration::from_millis(100))
            .min(
                end.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            );
        socket
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                let Ok(contents) = buf[..n].try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    },
                );
                rtc.handle_input(input)
                    .map_err(|e| format!("rtc input: {e}"))?;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                rtc.handle_input(Input::Timeout(Instant::now()))
                    .map_err(|e| format!("rtc timeout: {e}"))?;
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    if !p.connected {
        return Err("never connected".into());
    }
    Ok(())
}

/// The payload types of the answer's video m-line, its RTX ones
/// (RFC 4588 §8.6, `rtx/90000`) left out: whose sequence numbers count.
fn video_pts(sdp: &str) -> Vec<u8> {
    let mut pts = Vec::new();
    let mut in_video = false;
    for l in sdp.lines() {
        if let Some(m) = l.strip_prefix("m=") {
            in_video = m.starts_with("video");
            if in_video {
                pts.extend(
                    m.split_whitespace()
                        .skip(3)
                        .filter_map(|p| p.parse::<u8>().ok()),
                );
            }
        } else if let Some(r) = l.strip_prefix("a=rtpmap:") {
            let mut it = r.split_whitespace();
            if let (true, Some(pt), Some(enc)) = (in_video, it.next(), it.next()) {
                if enc.to_ascii_lowercase().starts_with("rtx/") {
                    pts.retain(|p| Some(*p) != pt.parse().ok());
                }
            }
        }
    }
    pts
}

/// POSTs `sdp` as `application/sdp` (WHEP, RFC 9725 §4.2) over plain
/// HTTP/1.1 and returns the answer's body (200 or 201).
fn post_sdp(url: &str, sdp: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    )
    .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    // An answer is a few KiB; a server that sends more is not answering.
    (&mut s)
        .take(1 << 20)
        .read_to_end(&mut resp)
        .map_err(|e| format!("read answer: {e}"))?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" && status != "201" {
        return Err(format!(
            "offer refused: {}: {body}",
            head.lines().next().unwrap_or("")
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
