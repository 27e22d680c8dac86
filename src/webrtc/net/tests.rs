//! The shared ICE port: a binding request's username, GSO runs, one
//! datagram per packet, packets to the peer they name; the fuzz corpus
//! replayed.

use super::*;
use proptest::prelude::*;

/// A Binding request as Chromium sends it: USERNAME, then other
/// attributes (captured shape, values made up).
fn request(user: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    // PRIORITY first, so the walk has to skip one.
    attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x7f, 0x1e, 0xff]);
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attrs.extend_from_slice(user.as_bytes());
    attrs.resize(attrs.len().next_multiple_of(4), 0);
    let mut p = vec![0x00, 0x01];
    p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    p.extend_from_slice(&[7; 12]);
    p.extend_from_slice(&attrs);
    p
}

#[test]
fn finds_the_username_of_a_binding_request() {
    assert_eq!(
        stun_binding_username(&request("abcd:wxyz")),
        Some("abcd:wxyz")
    );
    assert_eq!(stun_binding_username(&request("odd:5")), Some("odd:5"));
    // A Binding success response is not a request.
    let mut r = request("abcd:wxyz");
    r[0..2].copy_from_slice(&[0x01, 0x01]);
    assert_eq!(stun_binding_username(&r), None);
    // DTLS, RTP: not STUN.
    assert_eq!(stun_binding_username(&[22, 254, 253, 0, 0]), None);
    assert_eq!(stun_binding_username(&[0x80; 40]), None);
    // Truncated: the header says more than there is.
    let r = request("abcd:wxyz");
    assert_eq!(stun_binding_username(&r[..r.len() - 2]), None);
}

#[test]
fn gso_runs_are_equal_sizes_to_one_address_the_last_shorter() {
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let us: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let p = |to, n| (us, to, n);
    // A frame: full packets, a short last one; then the next peer's.
    let frame = [p(a, 1200), p(a, 1200), p(a, 700), p(b, 1200), p(b, 1200)];
    assert_eq!(gso_runs(&frame), vec![0..3, 3..5]);
    // A short packet ends a run; a longer one starts a new one.
    let mixed = [p(a, 500), p(a, 1200), p(a, 1200), p(a, 100), p(a, 100)];
    assert_eq!(gso_runs(&mixed), vec![0..1, 1..4, 4..5]);
    // Another of our addresses is another socket.
    let other: SocketAddr = "127.0.0.2:9".parse().unwrap();
    assert_eq!(gso_runs(&[p(a, 1200), (other, a, 1200)]), vec![0..1, 1..2]);
    // The kernel's bounds: 64 segments, and the bytes of one datagram.
    let many = vec![p(a, 100); 150];
    assert_eq!(gso_runs(&many), vec![0..64, 64..128, 128..150]);
    let big = vec![p(a, 1400); 50];
    let runs = gso_runs(&big);
    assert!(
        runs.iter().all(|r| r.len() * 1400 <= GSO_MAX_BYTES),
        "{runs:?}"
    );
    assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 50);
    assert_eq!(gso_runs(&[]), Vec::<Range<usize>>::new());
}

/// Queued packets arrive as the datagrams they were, in order, whether
/// they went by GSO or one by one.
#[tokio::test]
async fn a_flush_delivers_each_packet_as_its_own_datagram() {
    let cfg = crate::config::WebRtcConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        udp: true,
        tcp: false,
        candidates: vec![],
        ice_servers: vec![],
    };
    let t = Transport::bind(&cfg).await.unwrap();
    let ours = t.udp_addrs()[0];
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = c.local_addr().unwrap();
    // The reactor learns the socket is writable on its first turn
    // (until then a `try_` send would not even try).
    tokio::time::sleep(Duration::from_millis(50)).await;
    for gso in [true, false] {
        t.gso.store(gso, Ordering::Relaxed);
        let mut r = t.register("gso");
        let sizes = [1200, 1200, 1200, 333, 1200, 90];
        for (i, n) in sizes.iter().enumerate() {
            r.queue(Protocol::Udp, ours, to, vec![i as u8; *n]);
        }
        r.flush();
        let mut buf = [0u8; 2048];
        for (i, n) in sizes.iter().enumerate() {
            let (got, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!((got, from), (*n, ours), "packet {i}, gso {gso}");
            assert!(buf[..got].iter().all(|b| *b == i as u8));
        }
        assert!(r.outbox.is_empty());
    }
    // Loopback takes GSO: it was not turned off by a refusal.
    t.gso.store(true, Ordering::Relaxed);
    let mut r = t.register("gso2");
    r.queue(Protocol::Udp, ours, to, vec![1; 1000]);
    r.queue(Protocol::Udp, ours, to, vec![2; 1000]);
    r.flush();
    assert!(t.gso.load(Ordering::Relaxed));
}

#[test]
fn replay_fuzz_corpus() {
    crate::replay_fuzz_corpus("stun_username", fuzz);
}

proptest! {
    #[test]
    fn never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
        fuzz(&data);
    }

    #[test]
    fn any_username_round_trips(user in "[a-zA-Z0-9+/]{1,40}:[a-zA-Z0-9+/]{1,40}") {
        let r = request(&user);
        prop_assert_eq!(stun_binding_username(&r), Some(user.as_str()));
    }
}

/// Two peers on one socket each get only their own packets, and a
/// packet after the request follows it by address.
#[tokio::test]
async fn packets_go_to_the_peer_they_name() {
    let cfg = crate::config::WebRtcConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        udp: true,
        tcp: true,
        candidates: vec![("127.0.0.1".into(), 1)],
        ice_servers: vec![],
    };
    let t = Transport::bind(&cfg).await.unwrap();
    let mut a = t.register("aaaa");
    let mut b = t.register("bbbb");
    let ours = t.udp_addrs()[0];
    let c1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let c2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c1.send_to(&request("bbbb:x"), ours).unwrap();
    c2.send_to(&request("aaaa:y"), ours).unwrap();
    c1.send_to(b"after", ours).unwrap();
    async fn got(r: &mut Registration) -> Packet {
        tokio::time::timeout(Duration::from_secs(2), r.rx.recv())
            .await
            .unwrap()
            .unwrap()
    }
    let p = got(&mut b).await;
    assert_eq!(p.source, c1.local_addr().unwrap());
    assert_eq!(stun_binding_username(&p.contents), Some("bbbb:x"));
    assert_eq!(got(&mut b).await.contents, b"after");
    assert_eq!(got(&mut a).await.source, c2.local_addr().unwrap());
    // A stranger's packet goes nowhere.
    let c3 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c3.send_to(b"stranger", ours).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.rx.try_recv().is_err() && b.rx.try_recv().is_err());

    // Candidates: host UDP and passive TCP on loopback, then the
    // configured one (a port forward to us) as server-reflexive.
    let c = t.candidates("127.0.0.1".parse().unwrap()).await;
    let sdp: Vec<String> = c.iter().map(|c| c.to_sdp_string()).collect();
    assert_eq!(c.len(), 3, "{sdp:?}");
    assert!(
        sdp[0].contains(&format!(
            "udp 2130706175 127.0.0.1 {} typ host",
            ours.port()
        )),
        "{sdp:?}"
    );
    assert!(sdp[1].contains("tcptype passive"), "{sdp:?}");
    assert!(sdp[2].contains("127.0.0.1 1 typ srflx"), "{sdp:?}");
    // A remote peer is not told our loopback addresses.
    let c = t.candidates("192.0.2.7".parse().unwrap()).await;
    assert_eq!(c.len(), 1, "{c:?}");

    // TCP: the first frame names the peer, the reply goes back framed.
    let mut s = tokio::net::TcpStream::connect(t.tcp_addrs()[0])
        .await
        .unwrap();
    let req = request("aaaa:z");
    let mut f = (req.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&req);
    s.write_all(&f).await.unwrap();
    let p = got(&mut a).await;
    assert_eq!(p.proto, Protocol::Tcp);
    a.saw(&p);
    a.send(Protocol::Tcp, p.destination, p.source, b"pong");
    let mut back = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"\x00\x04pong");

    // A peer that leaves takes its routes along.
    drop(a);
    c2.send_to(b"late", ours).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(t
        .routes
        .lock()
        .unwrap()
        .by_pair
        .values()
        .all(|r| r.peer == 1));
}
